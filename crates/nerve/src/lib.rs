//! nerve: an event bus for Rust, the nervous system of a program.
//!
//! One place where everything that happens in a program (a service, an agent
//! runtime, a long batch job) is published, routed, recorded and watched.
//! This crate is the facade: it re-exports the parts and wires their features.
//!
//! # Key types
//!
//! * [`Bus`]: publish events by name, deliver them to sync and async handlers
//!   by pattern, in priority order, isolated from each other's failures.
//! * [`Event`]: an immutable, cheaply cloned record of something that happened.
//! * [`Pattern`]: `user.login`, `chat.*`, `*`.
//! * [`correlation`]: the id that follows a piece of work across events,
//!   threads and tasks.
//! * [`TypedEvent`]: emit and subscribe to Rust structs as themselves.
//! * [`Journal`] (feature `journal`, on by default): the JSONL audit log a
//!   bus records every accepted event in, with [`Fsync`] durability policies.
//! * [`metrics`]: the [`Metrics`](metrics::Metrics) trait the bus reports
//!   through, the names of its metrics, and in-memory and callback recorders.
//! * [`trace`] and [`instrument`]: the W3C trace context events carry, and
//!   the hook tracing bridges use; `otel` (feature `otel`) is the
//!   OpenTelemetry bridge, `tracing_layer()` (feature `tracing`) the
//!   `tracing` one.
//!
//! # Example
//!
//! ```
//! use nerve::{Bus, Event, Subscribe, json};
//!
//! let bus = Bus::new();
//! bus.subscribe_with("user.*", |e: &Event| {
//!     assert_eq!(e.data()["username"], "alice");
//! }, Subscribe::new().name("audit").priority(100))?;
//!
//! let _guard = nerve::correlation::enter("req-1");
//! bus.emit("user.login", json!({"username": "alice"}))?;
//!
//! let recent = bus.history(&nerve::HistoryQuery::new().pattern("user.*")?.limit(10));
//! assert_eq!(recent[0].correlation_id().unwrap().as_str(), "req-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Examples
//!
//! * `examples/extraction.rs`: the extraction integration guide's script,
//!   ported: early validation stops a broken batch run at specimen 5, email
//!   and webhook alerts, one `events.jsonl` for every run
//!   (`cargo run -p nerve --features webhook,email --example extraction`).
//! * `examples/quickstart.rs`: the README's quick start.
//! * `examples/otel.rs`: one OpenTelemetry trace from the emitting span
//!   through every handler (`--features otel`).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `full`  | no      | every stable feature |
//! | `consumers` | no | `consumers`: early validation that halts a broken run, live run metrics, alerts to programs or to sinks of your own; needs only tokio |
//! | `dashboard` | no | `dashboard`: the live web dashboard (`serve(&bus, addr)`, `Dashboard`): runs with success-rate charts, throughput and ETA, drops and dead letters, every event live over Server-Sent Events, from buses and journals (implies `journal`) |
//! | `webhook` | no | `consumers::alert::WebhookSink`: alerts POSTed as JSON over HTTP(S) (`reqwest` with rustls; implies `consumers`) |
//! | `email` | no | `consumers::alert::EmailSink`: alerts by SMTP, STARTTLS through rustls (`lettre`; implies `consumers`) |
//! | `progress` | no | `consumers::ProgressConsumer`: a terminal progress bar driven by events (`indicatif`; implies `consumers`) |
//! | `redact` | no | `redact`: the `Redactor`, for what leaves the process (journal, dead letters, alerts, bridges) |
//! | `journal` | yes   | [`journal`]: the JSONL audit log, [`Journal`] and [`Fsync`]; `Bus::builder().journal(..)` records every accepted event |
//! | `metrics-facade` | no | `metrics::MetricsFacade`: the bus's metrics through the [`metrics`](https://docs.rs/metrics) crate, so any of its exporters (Prometheus included) can publish them |
//! | `otel` | no | `otel`: the OpenTelemetry bridge (`OtelLayer`, `traced`, `inject`/`extract`, `trace_correlation_id`); one trace from the emitting span through every handler. Depends on the OpenTelemetry API only: install an SDK provider in the application |
//! | `tracing` | no | `tracing_layer()`: handler deliveries inside `tracing` spans carrying the event and its correlation id (implies `otel`) |
//! | `nats` | no | `nats`: the NATS bridge (`NatsBridge`): export events to NATS subjects, import messages as events, the journal's line on the wire (implies `journal`) |
//!
//! Without `otel`, `tracing` and `nats` nothing of the bridges is compiled in.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85 (edition 2024).

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "consumers")]
#[doc(inline)]
pub use nerve_consumers as consumers;
#[doc(inline)]
pub use nerve_core::query::HistoryQuery;
#[cfg(feature = "redact")]
#[doc(inline)]
pub use nerve_core::redact;
#[doc(inline)]
pub use nerve_core::{
    CorrelationId, DecodeError, Event, EventBuilder, EventId, LaneAnomaly, MergedLanes, Pattern,
    PatternError, RawValue, Stamp, Timestamp, TypedEvent, Value, json, merge_lanes,
};
#[doc(inline)]
pub use nerve_core::{correlation, dead_letter, instrument, metrics, name, run, sink, trace};
/// The live web dashboard (the `nerve-dashboard` crate):
/// [`dashboard::serve`] and [`dashboard::Dashboard`].
#[cfg(feature = "dashboard")]
#[doc(inline)]
pub use nerve_dashboard as dashboard;
/// The NATS bridge (the `nerve-nats` crate): [`nats::NatsBridge`].
#[cfg(feature = "nats")]
#[doc(inline)]
pub use nerve_nats as nats;
/// The OpenTelemetry bridge (the `nerve-otel` crate): give
/// [`otel::OtelLayer`] to [`BusBuilder::instrument`].
#[cfg(feature = "otel")]
#[doc(inline)]
pub use nerve_otel as otel;

/// The `tracing` bridge, to give to [`BusBuilder::instrument`]: handler
/// deliveries run inside `nerve.handle` spans carrying the event's type, id
/// and correlation id, and emits record the correlation id on the current
/// span (see [`otel::TracingLayer`]).
///
/// ```
/// let bus = nerve::Bus::builder().instrument(nerve::tracing_layer()).build()?;
/// # Ok::<(), nerve::BuildError>(())
/// ```
#[cfg(feature = "tracing")]
pub fn tracing_layer() -> nerve_otel::TracingLayer {
    nerve_otel::TracingLayer::new()
}
/// Components attached to a bus that report their state and counters in
/// [`Bus::stats`] (bridges, servers): [`attachment::Attachment`].
#[doc(inline)]
pub use nerve_router::attachment;
/// Ending a run cleanly on Ctrl-C or SIGTERM (Unix): [`signals::install`].
#[cfg(unix)]
#[doc(inline)]
pub use nerve_router::signals;
#[doc(inline)]
pub use nerve_router::{
    BuildError, Bus, BusBuilder, BusStats, DEFAULT_TERMINAL_PATTERNS, DeadLetter, DeadLetterQueue,
    DeadLetterReason, DeadLetterStats, DeadLetterStore, DeadLetterStoreError, DeliveryReport,
    DropReason, Durable, EmitError, EmitManyError, EventStream, HandlerError, HandlerOutcome,
    IntoHandlerResult, IntoPatterns, Outcome, Overflow, Reject, RetryError, RetrySummary,
    ShutdownGuard, ShutdownReport, StreamOptions, Subscribe, SubscribeError, SubscriptionId,
    WeakBus, global,
};

/// The JSONL journal: an ordered, crash-safe, rotating audit log of every
/// event a bus accepts (the `nerve-journal` crate).
#[cfg(feature = "journal")]
#[doc(inline)]
pub use nerve_journal as journal;
#[cfg(feature = "journal")]
#[doc(inline)]
pub use nerve_journal::{DeadLetterJournal, Fsync, Journal};

/// Stats types returned by [`Bus::stats`].
pub mod stats {
    pub use nerve_router::{
        AttachmentStats, BusStats, DeadLetterStats, EventStats, RunStats, SubscriberStats,
        SubscriptionStats,
    };
}

/// The user guide (`docs/guide/`), its code blocks compiled and run as
/// doctests: `cargo test --doc -p nerve --all-features`. Only under
/// `cfg(doctest)`, so the published crate neither needs nor shows it.
#[cfg(doctest)]
pub mod guide {
    #[doc = include_str!("../../../docs/guide/01-getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../../../docs/guide/02-concepts.md")]
    pub struct Concepts;
    #[doc = include_str!("../../../docs/guide/03-handlers.md")]
    pub struct Handlers;
    #[doc = include_str!("../../../docs/guide/04-streams.md")]
    pub struct Streams;
    #[cfg(feature = "journal")]
    #[doc = include_str!("../../../docs/guide/05-runs.md")]
    pub struct Runs;
    #[cfg(feature = "journal")]
    #[doc = include_str!("../../../docs/guide/06-persistence-and-cli.md")]
    pub struct Persistence;
    #[cfg(all(feature = "webhook", feature = "email"))]
    #[doc = include_str!("../../../docs/guide/07-consumers.md")]
    pub struct Consumers;
    #[cfg(feature = "tracing")]
    #[doc = include_str!("../../../docs/guide/08-tracing.md")]
    pub struct Tracing;
    #[cfg(all(feature = "nats", feature = "consumers"))]
    #[doc = include_str!("../../../docs/guide/09-nats.md")]
    pub struct Nats;
    #[cfg(feature = "dashboard")]
    #[doc = include_str!("../../../docs/guide/10-dashboard.md")]
    pub struct Dashboard;
}
