//! [`CallbackMetrics`]: a closure called for every recording.

use std::fmt;
use std::sync::Arc;

use super::{MetricKind, Metrics};

type Callback = dyn Fn(MetricKind, &'static str, f64, &[(&'static str, &str)]) + Send + Sync;

/// A [`Metrics`] that calls a closure for every recording, to bridge to a
/// backend nerve does not know.
///
/// The closure receives the kind, the name, the value and the labels.
/// Counter increments arrive as `f64`, which is exact up to 2^53.
/// Cloning is cheap and shares the closure.
///
/// # Example
///
/// ```
/// use nerve::metrics::{CallbackMetrics, MetricKind, Metrics, names};
///
/// let metrics = CallbackMetrics::new(|kind, name, value, labels| {
///     println!("{kind} {name} {value} {labels:?}");
/// });
/// metrics.counter(names::EVENTS_EMITTED_TOTAL, 1, &[("event_type", "user.login")]);
/// ```
#[derive(Clone)]
pub struct CallbackMetrics {
    callback: Arc<Callback>,
}

impl CallbackMetrics {
    /// Calls `callback` for every recording.
    pub fn new<F>(callback: F) -> Self
    where
        F: Fn(MetricKind, &'static str, f64, &[(&'static str, &str)]) + Send + Sync + 'static,
    {
        Self {
            callback: Arc::new(callback),
        }
    }
}

impl fmt::Debug for CallbackMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackMetrics").finish_non_exhaustive()
    }
}

impl Metrics for CallbackMetrics {
    fn counter(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]) {
        // Exact up to 2^53, far beyond any single increment the bus makes.
        (self.callback)(MetricKind::Counter, name, value as f64, labels);
    }

    fn gauge(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        (self.callback)(MetricKind::Gauge, name, value, labels);
    }

    fn histogram(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        (self.callback)(MetricKind::Histogram, name, value, labels);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::metrics::names;

    type Call = (MetricKind, &'static str, f64, Vec<(&'static str, String)>);

    #[test]
    fn callback_receives_kind_name_value_and_labels() {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let sink = Arc::clone(&calls);
        let metrics = CallbackMetrics::new(move |kind, name, value, labels| {
            let labels = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
            sink.lock().unwrap().push((kind, name, value, labels));
        });

        let subscription = String::from("audit");
        metrics.counter(
            names::EVENTS_DELIVERED_TOTAL,
            3,
            &[("subscription", &subscription)],
        );
        metrics.gauge(names::PENDING, 7.0, &[]);
        metrics.clone().histogram(
            names::HANDLER_DURATION_SECONDS,
            0.5,
            &[("subscription", "audit")],
        );

        let calls = calls.lock().unwrap();
        let audit = vec![("subscription", "audit".to_owned())];
        assert_eq!(
            *calls,
            vec![
                (
                    MetricKind::Counter,
                    names::EVENTS_DELIVERED_TOTAL,
                    3.0,
                    audit.clone()
                ),
                (MetricKind::Gauge, names::PENDING, 7.0, vec![]),
                (
                    MetricKind::Histogram,
                    names::HANDLER_DURATION_SECONDS,
                    0.5,
                    audit
                ),
            ]
        );
        assert_eq!(format!("{metrics:?}"), "CallbackMetrics { .. }");
    }
}
