//! What a flush of the [`AlertConsumer`](super::AlertConsumer) found.

use std::fmt;

/// What [`AlertConsumer::flush`](super::AlertConsumer::flush) found: the
/// deliveries settled since the previous flush (or since the consumer was
/// built), and the alerts still on their way when it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Deliveries that succeeded (one per alert and sink).
    pub delivered: u64,
    /// Deliveries that failed after their retries.
    pub failed: u64,
    /// Alerts dropped because the channel to the sinks was full.
    pub dropped: u64,
    /// Alerts still queued or being delivered when the flush gave up.
    pub pending: u64,
}

impl FlushReport {
    /// Whether every alert was delivered: nothing failed, was dropped or is
    /// still pending.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.dropped == 0 && self.pending == 0
    }
}

impl fmt::Display for FlushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        let mut parts = Vec::new();
        if self.failed > 0 {
            parts.push(format!(
                "{} alert {} failed",
                self.failed,
                plural(self.failed, "delivery", "deliveries")
            ));
        }
        if self.dropped > 0 {
            parts.push(format!(
                "{} {} dropped",
                self.dropped,
                plural(self.dropped, "alert", "alerts")
            ));
        }
        if self.pending > 0 {
            parts.push(format!(
                "{} {} still pending",
                self.pending,
                plural(self.pending, "alert", "alerts")
            ));
        }
        if parts.is_empty() {
            parts.push("every alert delivered".to_owned());
        }
        write!(f, "{} ({} delivered)", parts.join(", "), self.delivered)
    }
}

/// A flush found alert deliveries that failed, alerts that were dropped, or
/// alerts still pending at its timeout; [`report`](Self::report) has the
/// counts. Displays as `1 alert delivery failed (0 delivered)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{report}")]
#[non_exhaustive]
pub struct FlushError {
    /// What the flush found.
    pub report: FlushReport,
}

impl FlushError {
    /// `Ok(report)` when it is clean, else this error carrying it.
    pub(super) fn check(report: FlushReport) -> Result<FlushReport, Self> {
        if report.is_clean() {
            Ok(report)
        } else {
            Err(Self { report })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_sentences() {
        let check = |report: FlushReport, expected: &str| assert_eq!(report.to_string(), expected);
        check(
            FlushReport {
                delivered: 2,
                ..FlushReport::default()
            },
            "every alert delivered (2 delivered)",
        );
        check(
            FlushReport {
                failed: 1,
                ..FlushReport::default()
            },
            "1 alert delivery failed (0 delivered)",
        );
        check(
            FlushReport {
                delivered: 1,
                failed: 2,
                dropped: 3,
                pending: 1,
            },
            "2 alert deliveries failed, 3 alerts dropped, 1 alert still pending (1 delivered)",
        );
        assert!(FlushError::check(FlushReport::default()).is_ok());
    }
}
