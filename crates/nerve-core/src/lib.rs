//! The vocabulary of the [nerve] event bus: events, names, patterns and
//! correlation.
//!
//! `nerve-core` owns the types every other nerve crate shares and knows no I/O
//! and no async runtime. Applications use it through the `nerve` facade;
//! crates that extend nerve (sinks, bridges) depend on it directly.
//!
//! # Key types
//!
//! * [`Event`]: an immutable, cheaply cloned record of something that happened,
//!   built with [`Event::builder`].
//! * [`EventId`]: a unique, time-sortable UUIDv7; [`Timestamp`]: UTC microseconds.
//! * [`Pattern`]: which event types a subscriber receives (`user.login`,
//!   `chat.*`, `*`), validated when parsed.
//! * [`name`]: the `{domain}.{action}` convention and its validation.
//! * [`correlation`]: the id that follows a piece of work across events,
//!   threads and tasks.
//! * [`TypedEvent`]: a Rust type that names its event type.
//! * [`metrics`]: the [`Metrics`](metrics::Metrics) trait the bus reports
//!   through, the names of its metrics, and in-memory and callback recorders.
//! * [`sink`]: the [`EventSink`](sink::EventSink) trait through which a bus
//!   records every event it accepts (the journal implements it).
//! * `redact` (feature `redact`): a `Redactor` that removes personal data
//!   and secrets from events before they leave the process.
//! * [`trace`]: the W3C trace context an event carries from the span it was
//!   emitted in; [`instrument`]: the [`Instrument`](instrument::Instrument)
//!   trait through which tracing bridges see emits and deliveries.
//! * [`lanes`]: merging the parallel branches of a run ([`merge_lanes`]) and
//!   reporting what is wrong with their numbering.
//!
//! # Example
//!
//! Every example in these docs is written as a user of the
//! [`nerve`](https://docs.rs/nerve) facade writes it, and runs as a doctest
//! that way: this crate is the vocabulary re-exported at the root of `nerve`
//! (`nerve::Event`, `nerve::Pattern`, `nerve::correlation`, ...) there.
//!
//! ```
//! use nerve::{Event, Pattern};
//! let event = Event::builder("chat.message.sent")
//!     .data(nerve::json!({"text": "hi"}))
//!     .build()?;
//! assert!(Pattern::parse("chat.*")?.matches(event.event_type()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `metrics-facade` | no | `metrics::MetricsFacade`, which forwards to the [`metrics`](https://docs.rs/metrics) crate and its exporters |
//! | `redact` | no | `redact::Redactor`: key- and pattern-based redaction with 25 validated detectors (email, cards, IBAN, tokens, keys, …) |
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85 (edition 2024).
//!
//! [nerve]: https://docs.rs/nerve

#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled as a doctest: the crate used without the
/// `nerve` facade, as its own dependency.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod correlation;
pub mod dead_letter;
mod event;
pub mod instrument;
pub mod lanes;
pub mod metrics;
pub mod name;
mod pattern;
pub mod query;
#[cfg(feature = "redact")]
pub mod redact;
pub mod run;
pub mod sink;
pub mod trace;
mod typed;

#[doc(inline)]
pub use correlation::CorrelationId;
#[doc(inline)]
pub use dead_letter::{
    DeadLetter, DeadLetterReason, DeadLetterStore, DeadLetterStoreError, SubscriptionId,
};
pub use event::{DecodeError, Event, EventBuilder, EventId, Stamp, Timestamp};
#[doc(inline)]
pub use lanes::{LaneAnomaly, MergedLanes, merge_lanes};
pub use pattern::{Pattern, PatternError, PatternErrorReason, Segment};
pub use typed::TypedEvent;

/// JSON text checked but not parsed (re-exported from `serde_json`), for
/// [`EventBuilder::data_raw`].
pub use serde_json::value::RawValue;
/// JSON values, the payload type of events (re-exported from `serde_json`).
pub use serde_json::{Value, json};
