//! The errors of the bus, one type per operation.

use nerve_core::name::ValidationError;
use nerve_core::sink::SinkError;
use nerve_core::{EventId, PatternError};

use crate::subscribe::SubscriptionId;

/// An event was not accepted, or a handler asked the emitter to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The bus was shut down.
    #[error("the bus is shut down")]
    Closed,
    /// The event type broke a naming rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A typed payload could not be serialized to JSON.
    #[error("event {event_type} could not be serialized: {source}")]
    Serialize {
        /// The event type.
        event_type: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A handler returned [`HandlerError::halt`](crate::HandlerError::halt).
    /// The event was delivered to every handler.
    #[error("{reason} (halted by {subscription_label} on event {event_id})")]
    Halted {
        /// The event being handled.
        event_id: EventId,
        /// The subscription that halted.
        subscription: SubscriptionId,
        /// Its name, or its id when it has none.
        subscription_label: String,
        /// The reason it gave.
        reason: String,
    },
    /// An async handler matched but no tokio runtime is available: emit from
    /// inside a runtime, or give the bus one with `Bus::builder().runtime(handle)`.
    #[error(
        "event {event_type} has async handlers but no tokio runtime is available; \
         emit from inside a runtime or give the bus one with Bus::builder().runtime(handle)"
    )]
    NoRuntime {
        /// The event type.
        event_type: String,
    },
    /// Waiting here would wait on ourselves: `emit_and_wait` inside a handler
    /// for an event that this handler (or one waiting on it) must also handle,
    /// or a blocking wait on a single-threaded runtime.
    #[error("emit_and_wait would deadlock: {reason}")]
    WouldDeadlock {
        /// Why.
        reason: String,
    },
    /// A subscriber with [`Overflow::Error`](crate::Overflow::Error) had no
    /// room. Every other subscriber received the event.
    #[error("the queue of {subscription_label} is full; event {event_id} was not delivered to it")]
    QueueFull {
        /// The event.
        event_id: EventId,
        /// The subscriber whose queue is full.
        subscription: SubscriptionId,
        /// Its name, or its id when it has none.
        subscription_label: String,
    },
    /// The bus's `max_pending` bound was reached and its policy is
    /// [`Overflow::Error`](crate::Overflow::Error). Inline handlers and
    /// subscribers with room received the event.
    #[error(
        "{max_pending} deliveries are pending, the bus's bound; event {event_id} was not queued for {subscription_label}"
    )]
    PendingFull {
        /// The event.
        event_id: EventId,
        /// The bound.
        max_pending: usize,
        /// The subscriber that did not get it.
        subscription_label: String,
    },
    /// A guard refused the event: it was not delivered or recorded.
    #[error("event {event_type} rejected by a guard: {reason}")]
    Rejected {
        /// The event type.
        event_type: String,
        /// The guard's reason.
        reason: String,
    },
    /// The event is durable (terminal by default, see
    /// [`BusBuilder::durable_patterns`](crate::BusBuilder::durable_patterns)),
    /// so `emit` promised it on disk before returning, and the journal could
    /// not confirm that: a failed write or sync (a full disk), a writer that
    /// did not answer within the journal's `drop_timeout` (the event may
    /// still be written later), a closed journal. The event was delivered to
    /// every handler regardless. As every journal failure, it is also counted
    /// in `stats().events.journal_errors` and published as
    /// `system.journal_error`.
    ///
    /// A handler that keeps events elsewhere says the same with
    /// [`HandlerError::not_recorded`](crate::HandlerError::not_recorded):
    /// the NATS bridge's exports, when the server did not take or the stream
    /// did not acknowledge a durable event in time. `error` then starts with
    /// the subscription's name; the journal's word comes first when both
    /// fail. A halt or a refusal of the same emit is returned instead of
    /// this.
    // `error` is in the message and not a `#[source]`, so that a printed
    // chain of causes does not say it twice.
    #[error("event {event_id} was delivered but not recorded: {error}")]
    NotRecorded {
        /// The event.
        event_id: EventId,
        /// What the journal said.
        error: SinkError,
    },
    /// Handlers emitting events whose handlers emit events ... went deeper
    /// than the bus allows; likely an emit loop.
    #[error(
        "emit nested {depth} levels deep inside handlers; is a handler re-emitting its own event?"
    )]
    TooDeep {
        /// The nesting depth reached.
        depth: usize,
    },
}

/// A subscription could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// No pattern was given.
    #[error("a subscription needs at least one pattern")]
    NoPatterns,
    /// The bus was shut down.
    #[error("the bus is shut down")]
    Closed,
    /// The worker thread of a queued handler could not be started.
    #[error("could not start the worker thread of a queued handler: {0}")]
    Worker(#[source] std::io::Error),
}

/// A bus could not be built from its builder's settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_concurrent_handlers(0)` would never run an async handler.
    #[error("max_concurrent_handlers must be at least 1")]
    ZeroConcurrency,
    /// An allowed domain is not a valid domain segment.
    #[error("allowed domain {0:?} must match [a-z][a-z0-9_]*")]
    InvalidDomain(String),
}

/// Some events of `emit_many` were not accepted.
#[derive(Debug, thiserror::Error)]
#[error("event {index} of emit_many failed: {source}")]
pub struct EmitManyError {
    /// The position of the event that failed; the ones before it were emitted.
    pub index: usize,
    /// The ids of the events emitted before it.
    pub emitted: Vec<EventId>,
    /// Why it failed.
    #[source]
    pub source: EmitError,
}
