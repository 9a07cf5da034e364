//! The names, kinds and labels of the metrics the bus records.
//!
//! | name | kind | labels | meaning |
//! |------|------|--------|---------|
//! | [`nerve_events_emitted_total`](EVENTS_EMITTED_TOTAL) | counter | `event_type` | events accepted by `emit` |
//! | [`nerve_events_delivered_total`](EVENTS_DELIVERED_TOTAL) | counter | `subscription` | events handed to a subscription's handler |
//! | [`nerve_events_dropped_total`](EVENTS_DROPPED_TOTAL) | counter | `subscription`, `reason` | events a subscription never saw, such as those shed by a full queue |
//! | [`nerve_handler_duration_seconds`](HANDLER_DURATION_SECONDS) | histogram | `subscription` | how long one handler call took, in seconds |
//! | [`nerve_handler_failures_total`](HANDLER_FAILURES_TOTAL) | counter | `subscription`, `reason` | handler calls that failed; `reason` is one of [`handler_failure`] |
//! | [`nerve_queue_depth`](QUEUE_DEPTH) | gauge | `subscription` | events waiting in a subscription's queue |
//! | [`nerve_pending`](PENDING) | gauge | none | events emitted but not yet handled by every subscription |
//! | [`nerve_dead_letters`](DEAD_LETTERS) | gauge | none | dead letters currently held |
//! | [`nerve_dead_letters_total`](DEAD_LETTERS_TOTAL) | counter | `reason` | events that became dead letters |
//! | [`nerve_events_rejected_total`](EVENTS_REJECTED_TOTAL) | counter | `reason` | events refused by `emit` (for example by backpressure) |
//! | [`nerve_bridge_messages_total`](BRIDGE_MESSAGES_TOTAL) | counter | `bridge`, `outcome` | messages a bridge (such as the NATS bridge) dealt with; `outcome` is one of [`bridge_outcome`] |
//! | [`nerve_bridge_connected`](BRIDGE_CONNECTED) | gauge | `bridge` | 1 while a bridge's connection is up, 0 while it is down |
//! | [`nerve_bridge_disconnects_total`](BRIDGE_DISCONNECTS_TOTAL) | counter | `bridge` | connection losses of a bridge |
//! | [`nerve_bridge_reconnects_total`](BRIDGE_RECONNECTS_TOTAL) | counter | `bridge` | connections a bridge re-established after a loss |
//!
//! A bridge's export buffer is a bus stream (subscription `nats export
//! {pattern}` for the NATS bridge): its depth and drops are in
//! [`nerve_queue_depth`](QUEUE_DEPTH) and
//! [`nerve_events_dropped_total`](EVENTS_DROPPED_TOTAL) like any other.
//!
//! The same table is available as data in [`ALL`], for exporters that
//! describe metrics up front. Label keys are the constants in [`label`].
//!
//! Counters end in `_total` and durations are in seconds, as Prometheus
//! recommends, so the names can be exported unchanged.

use super::MetricKind;

/// Events accepted by `emit`; labels: `event_type`.
pub const EVENTS_EMITTED_TOTAL: &str = "nerve_events_emitted_total";
/// Events handed to a subscription's handler; labels: `subscription`.
pub const EVENTS_DELIVERED_TOTAL: &str = "nerve_events_delivered_total";
/// Events a subscription never saw; labels: `subscription`, `reason`.
pub const EVENTS_DROPPED_TOTAL: &str = "nerve_events_dropped_total";
/// How long one handler call took, in seconds; labels: `subscription`.
pub const HANDLER_DURATION_SECONDS: &str = "nerve_handler_duration_seconds";
/// Handler calls that failed; labels: `subscription`, `reason` (one of
/// [`handler_failure`]).
pub const HANDLER_FAILURES_TOTAL: &str = "nerve_handler_failures_total";
/// Events waiting in a subscription's queue; labels: `subscription`.
pub const QUEUE_DEPTH: &str = "nerve_queue_depth";
/// Events emitted but not yet handled by every subscription; no labels.
pub const PENDING: &str = "nerve_pending";
/// Dead letters currently held; no labels.
pub const DEAD_LETTERS: &str = "nerve_dead_letters";
/// Events that became dead letters; labels: `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "nerve_dead_letters_total";
/// Events refused by `emit`; labels: `reason`.
pub const EVENTS_REJECTED_TOTAL: &str = "nerve_events_rejected_total";

/// Messages a bridge dealt with; labels: `bridge` (its id, such as the NATS
/// bridge's origin), `outcome` (one of [`bridge_outcome`]).
pub const BRIDGE_MESSAGES_TOTAL: &str = "nerve_bridge_messages_total";
/// 1 while a bridge's connection is up, 0 while it is down; labels: `bridge`.
pub const BRIDGE_CONNECTED: &str = "nerve_bridge_connected";
/// Connection losses of a bridge; labels: `bridge`.
pub const BRIDGE_DISCONNECTS_TOTAL: &str = "nerve_bridge_disconnects_total";
/// Connections a bridge re-established after a loss; labels: `bridge`.
pub const BRIDGE_RECONNECTS_TOTAL: &str = "nerve_bridge_reconnects_total";

/// The label keys the bus uses.
pub mod label {
    /// The type of the event, such as `user.login`.
    pub const EVENT_TYPE: &str = "event_type";
    /// The name of the subscription.
    pub const SUBSCRIPTION: &str = "subscription";
    /// Why something was dropped, failed or rejected.
    pub const REASON: &str = "reason";
    /// The id of a bridge (the NATS bridge's origin id).
    pub const BRIDGE: &str = "bridge";
    /// What became of a message a bridge dealt with: one of
    /// [`bridge_outcome`](super::bridge_outcome).
    pub const OUTCOME: &str = "outcome";
}

/// The values of the `outcome` label on [`BRIDGE_MESSAGES_TOTAL`].
pub mod bridge_outcome {
    /// An event published to the other side.
    pub const PUBLISHED: &str = "published";
    /// A publish the client refused: the event is lost.
    pub const PUBLISH_ERROR: &str = "publish_error";
    /// A message emitted into the local bus.
    pub const IMPORTED: &str = "imported";
    /// A message that could not be imported (bad body, subject, or refused
    /// by the bus).
    pub const IMPORT_REJECTED: &str = "import_rejected";
    /// A message the bridge had published itself, received back and dropped.
    pub const ECHO_SUPPRESSED: &str = "echo_suppressed";
    /// A message on the broker's own subjects, not an event.
    pub const INTERNAL_SKIPPED: &str = "internal_skipped";
    /// An event that came in over a bridge, or describes the bridge's
    /// connection: not exported again.
    pub const NOT_FORWARDED: &str = "not_forwarded";
    /// An event whose type has no subject on the other side.
    pub const UNMAPPABLE: &str = "unmappable";
    /// An event whose message is larger than the broker takes: not sent.
    pub const TOO_LARGE: &str = "too_large";
    /// An event a durable store (a JetStream stream) acknowledged.
    pub const ACKED: &str = "acked";
    /// An event the durable store never acknowledged after every attempt:
    /// not stored.
    pub const ACK_FAILED: &str = "ack_failed";
    /// A durable message already delivered (by event id): not emitted twice.
    pub const DUPLICATE_DROPPED: &str = "duplicate_dropped";
}

/// The values of the `reason` label on [`HANDLER_FAILURES_TOTAL`].
pub mod handler_failure {
    /// The handler returned an error.
    pub const ERROR: &str = "error";
    /// The handler panicked.
    pub const PANIC: &str = "panic";
    /// The handler did not finish in time.
    pub const TIMEOUT: &str = "timeout";
}

/// One metric the bus records: its name, kind, label keys and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Descriptor {
    /// The metric's name, one of the constants in this module.
    pub name: &'static str,
    /// Whether it is a counter, a gauge or a histogram.
    pub kind: MetricKind,
    /// The label keys every recording carries, in sorted order.
    pub labels: &'static [&'static str],
    /// A one-line description, suitable for a Prometheus `HELP` line.
    pub help: &'static str,
}

const fn describe(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Descriptor {
    Descriptor {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric the bus records, in the order of the table above.
pub const ALL: &[Descriptor] = &[
    describe(
        EVENTS_EMITTED_TOTAL,
        MetricKind::Counter,
        &[label::EVENT_TYPE],
        "Events accepted by emit.",
    ),
    describe(
        EVENTS_DELIVERED_TOTAL,
        MetricKind::Counter,
        &[label::SUBSCRIPTION],
        "Events handed to a subscription's handler.",
    ),
    describe(
        EVENTS_DROPPED_TOTAL,
        MetricKind::Counter,
        &[label::REASON, label::SUBSCRIPTION],
        "Events a subscription never saw.",
    ),
    describe(
        HANDLER_DURATION_SECONDS,
        MetricKind::Histogram,
        &[label::SUBSCRIPTION],
        "How long one handler call took, in seconds.",
    ),
    describe(
        HANDLER_FAILURES_TOTAL,
        MetricKind::Counter,
        &[label::REASON, label::SUBSCRIPTION],
        "Handler calls that failed (error, panic or timeout).",
    ),
    describe(
        QUEUE_DEPTH,
        MetricKind::Gauge,
        &[label::SUBSCRIPTION],
        "Events waiting in a subscription's queue.",
    ),
    describe(
        PENDING,
        MetricKind::Gauge,
        &[],
        "Events emitted but not yet handled by every subscription.",
    ),
    describe(
        DEAD_LETTERS,
        MetricKind::Gauge,
        &[],
        "Dead letters currently held.",
    ),
    describe(
        DEAD_LETTERS_TOTAL,
        MetricKind::Counter,
        &[label::REASON],
        "Events that became dead letters.",
    ),
    describe(
        EVENTS_REJECTED_TOTAL,
        MetricKind::Counter,
        &[label::REASON],
        "Events refused by emit.",
    ),
    describe(
        BRIDGE_MESSAGES_TOTAL,
        MetricKind::Counter,
        &[label::BRIDGE, label::OUTCOME],
        "Messages a bridge dealt with, by outcome.",
    ),
    describe(
        BRIDGE_CONNECTED,
        MetricKind::Gauge,
        &[label::BRIDGE],
        "1 while a bridge's connection is up, 0 while it is down.",
    ),
    describe(
        BRIDGE_DISCONNECTS_TOTAL,
        MetricKind::Counter,
        &[label::BRIDGE],
        "Connection losses of a bridge.",
    ),
    describe(
        BRIDGE_RECONNECTS_TOTAL,
        MetricKind::Counter,
        &[label::BRIDGE],
        "Connections a bridge re-established after a loss.",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_follow_prometheus_conventions() {
        let mut seen = HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} listed twice", d.name);
            assert!(d.name.starts_with("nerve_"), "{}", d.name);
            assert!(
                d.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == MetricKind::Counter,
                d.name.ends_with("_total"),
                "only counters end in _total: {}",
                d.name
            );
            assert!(d.labels.is_sorted(), "{}", d.name);
            assert!(d.help.ends_with('.'), "{}", d.name);
        }
        assert_eq!(ALL.len(), 14);
    }
}
