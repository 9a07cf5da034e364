//! [`MetricsFacade`]: the bus's metrics through the `metrics` crate.

use super::{MetricKind, Metrics, names};

/// A [`Metrics`] that forwards to the [`metrics`](https://docs.rs/metrics)
/// crate, so whichever recorder the application installed (a Prometheus
/// exporter, StatsD, ...) receives the bus's metrics.
///
/// Counters go to `metrics::counter!(name, labels).increment(value)`, gauges
/// to `gauge!(..).set(value)` and histograms to `histogram!(..).record(value)`.
/// Label values are copied, since `metrics` keeps them. With no recorder
/// installed, `metrics` drops everything.
///
/// Available with the `metrics-facade` feature.
///
/// # Example
///
/// ```
/// use nerve::metrics::{Metrics, MetricsFacade, names};
///
/// // Install an exporter first, e.g. `metrics_exporter_prometheus::PrometheusBuilder`.
/// let metrics = MetricsFacade::new();
/// metrics.describe();
/// metrics.counter(names::EVENTS_EMITTED_TOTAL, 1, &[("event_type", "user.login")]);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsFacade {
    _private: (),
}

impl MetricsFacade {
    /// Forwards to the recorder `metrics` uses at the time of each recording.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Describes every metric in [`names::ALL`] to the current recorder, so
    /// exporters can print help text and units (`HELP` and `TYPE` lines in
    /// Prometheus). Optional; call it once after installing the recorder.
    pub fn describe(&self) {
        for d in names::ALL {
            let unit = d
                .name
                .ends_with("_seconds")
                .then_some(::metrics::Unit::Seconds);
            let name = ::metrics::KeyName::from_const_str(d.name);
            let help = ::metrics::SharedString::const_str(d.help);
            ::metrics::with_recorder(|r| match d.kind {
                MetricKind::Counter => r.describe_counter(name, unit, help),
                MetricKind::Gauge => r.describe_gauge(name, unit, help),
                MetricKind::Histogram => r.describe_histogram(name, unit, help),
            });
        }
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Vec<::metrics::Label> {
    labels
        .iter()
        .map(|&(key, value)| ::metrics::Label::new(key, value.to_owned()))
        .collect()
}

impl Metrics for MetricsFacade {
    fn counter(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]) {
        ::metrics::counter!(name, owned(labels)).increment(value);
    }

    fn gauge(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        ::metrics::gauge!(name, owned(labels)).set(value);
    }

    fn histogram(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        ::metrics::histogram!(name, owned(labels)).record(value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ::metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    use super::*;

    /// What arrived at the recorder: kind, name, labels and value.
    type Record = (MetricKind, String, Vec<(String, String)>, f64);

    /// What was described: kind, name, unit and help text.
    type Description = (MetricKind, String, Option<Unit>, String);

    /// A recorder that writes every recording and description to a list.
    #[derive(Default)]
    struct ListRecorder {
        records: Arc<Mutex<Vec<Record>>>,
        described: Mutex<Vec<Description>>,
    }

    /// The handle `ListRecorder` returns for one key.
    struct Handle {
        kind: MetricKind,
        key: Key,
        records: Arc<Mutex<Vec<Record>>>,
    }

    impl Handle {
        fn push(&self, value: f64) {
            let labels = self
                .key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            self.records.lock().unwrap().push((
                self.kind,
                self.key.name().to_owned(),
                labels,
                value,
            ));
        }
    }

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            self.push(value as f64);
        }

        fn absolute(&self, _value: u64) {
            unreachable!("MetricsFacade only increments counters");
        }
    }

    impl GaugeFn for Handle {
        fn increment(&self, _value: f64) {
            unreachable!("MetricsFacade only sets gauges");
        }

        fn decrement(&self, _value: f64) {
            unreachable!("MetricsFacade only sets gauges");
        }

        fn set(&self, value: f64) {
            self.push(value);
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, value: f64) {
            self.push(value);
        }
    }

    impl ListRecorder {
        fn handle(&self, kind: MetricKind, key: &Key) -> Arc<Handle> {
            Arc::new(Handle {
                kind,
                key: key.clone(),
                records: Arc::clone(&self.records),
            })
        }

        fn describe(&self, kind: MetricKind, key: KeyName, unit: Option<Unit>, help: SharedString) {
            let entry = (kind, key.as_str().to_owned(), unit, help.to_string());
            self.described.lock().unwrap().push(entry);
        }
    }

    impl Recorder for ListRecorder {
        fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(MetricKind::Counter, key, unit, help);
        }

        fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(MetricKind::Gauge, key, unit, help);
        }

        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(MetricKind::Histogram, key, unit, help);
        }

        fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(MetricKind::Counter, key))
        }

        fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(MetricKind::Gauge, key))
        }

        fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(MetricKind::Histogram, key))
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn values_arrive_at_the_installed_recorder() {
        let recorder = ListRecorder::default();
        let subscription = String::from("audit");
        ::metrics::with_local_recorder(&recorder, || {
            let metrics = MetricsFacade::new();
            metrics.counter(
                names::EVENTS_DROPPED_TOTAL,
                3,
                &[("subscription", &subscription), ("reason", "full")],
            );
            metrics.gauge(names::PENDING, 7.5, &[]);
            metrics.histogram(
                names::HANDLER_DURATION_SECONDS,
                0.25,
                &[("subscription", &subscription)],
            );
        });

        assert_eq!(
            *recorder.records.lock().unwrap(),
            vec![
                (
                    MetricKind::Counter,
                    names::EVENTS_DROPPED_TOTAL.to_owned(),
                    labels(&[("subscription", "audit"), ("reason", "full")]),
                    3.0,
                ),
                (MetricKind::Gauge, names::PENDING.to_owned(), vec![], 7.5),
                (
                    MetricKind::Histogram,
                    names::HANDLER_DURATION_SECONDS.to_owned(),
                    labels(&[("subscription", "audit")]),
                    0.25,
                ),
            ]
        );
    }

    #[test]
    fn describe_registers_every_bus_metric() {
        let recorder = ListRecorder::default();
        ::metrics::with_local_recorder(&recorder, || MetricsFacade::new().describe());

        let described = recorder.described.lock().unwrap();
        assert_eq!(described.len(), names::ALL.len());
        for (d, (kind, name, unit, help)) in names::ALL.iter().zip(described.iter()) {
            assert_eq!(
                (d.kind, d.name, d.help),
                (*kind, name.as_str(), help.as_str())
            );
            let seconds = d.name == names::HANDLER_DURATION_SECONDS;
            assert_eq!(*unit, seconds.then_some(Unit::Seconds), "{}", d.name);
        }
    }
}
