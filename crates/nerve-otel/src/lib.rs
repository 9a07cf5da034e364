//! OpenTelemetry and `tracing` bridges for the [nerve] event bus: an event
//! and everything it causes show up in one distributed trace, across
//! threads, async hops and queues.
//!
//! The bus records the trace context of the span an event is emitted in on
//! the event itself (W3C `traceparent` and `tracestate`, see
//! [`nerve_core::trace`]), so every handler's span is a child of the emitter's
//! span even when it runs later on another thread or task; the journal
//! writes that context and bridges carry it as headers.
//!
//! This crate depends on the OpenTelemetry API only. Install an SDK tracer
//! provider in your application; without one, everything here is a cheap
//! no-op.
//!
//! # Key types
//!
//! * [`OtelLayer`]: the instrument to give [`Bus::builder().instrument`].
//!   It records trace context at emit, adds a `nerve.emit {event_type}` span
//!   event to the emitting span, and runs every delivery inside a
//!   `nerve.handle {event_type}` consumer span.
//! * [`trace_correlation_id`]: the current trace id as a correlation id.
//! * [`traced`] / [`traced_async`]: run a closure or a future in a new span.
//! * [`inject`] / [`extract`]: carry an event's trace context over HTTP (or
//!   any text map).
//! * `TracingLayer` (feature `tracing`): the same for the `tracing` crate.
//!
//! [`Bus::builder().instrument`]: https://docs.rs/nerve-router/latest/nerve_router/struct.BusBuilder.html#method.instrument
//!
//! # Example
//!
//! Every example in these docs is written as a user of the
//! [`nerve`](https://docs.rs/nerve) facade writes it, and runs as a doctest
//! that way: this crate is `nerve::otel` (feature `otel`) there.
//!
//! ```
//! use nerve::otel::OtelLayer;
//! use opentelemetry::trace::{Tracer, TracerProvider};
//! # use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! # let exporter = InMemorySpanExporter::default();
//! # let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! let tracer = provider.tracer("app");
//! let bus = nerve::Bus::builder()
//!     .instrument(OtelLayer::with_tracer(provider.tracer("nerve")))
//!     .build()?;
//! bus.subscribe("order.placed", |_event| {
//!     // Runs inside the span `nerve.handle order.placed`, a child of
//!     // `checkout`.
//!     assert!(nerve::otel::trace_correlation_id().is_some());
//! })?;
//! tracer.in_span("checkout", |_| bus.emit("order.placed", nerve::json!({"id": 7})))?;
//! # assert_eq!(exporter.get_finished_spans()?.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Span and attribute mapping
//!
//! Handler spans follow the OpenTelemetry messaging semantic conventions
//! where they fit; what they do not cover is under `nerve.*`.
//!
//! | nerve | OpenTelemetry |
//! |-------|---------------|
//! | one delivery of an event to one subscription | span `nerve.handle {event_type}`, kind `Consumer`, parent: the span the event was emitted in |
//! | emitting an event inside a span | span event `nerve.emit {event_type}` on that span |
//! | (constant) | `messaging.system` = `nerve` |
//! | (constant) | `messaging.operation.type` = `process` |
//! | `event_type` | `messaging.destination.name` |
//! | `event_id` | `messaging.message.id` |
//! | `correlation_id` | `messaging.message.conversation_id` |
//! | `seq` | `nerve.event.seq` |
//! | `run_id`, `lane` | `nerve.run_id`, `nerve.lane` |
//! | subscription id and name | `nerve.subscription.id`, `nerve.subscription.name` |
//! | how the handler runs | `nerve.handler.mode` = `inline`, `queued` or `async` |
//! | outcome | `nerve.outcome` = `delivered`, `failed`, `halted`, `panicked` or `timed_out` |
//! | a failure | span status `Error` with the error text, and `error.type` = the outcome |
//! | `trace_context` | the parent span context (trace id, span id, flags, trace state) |
//!
//! # Cost
//!
//! Absent (no instrument on the bus), a bus pays one branch per emit and per
//! delivery. With [`OtelLayer`] and a sampler that drops everything, a
//! delivery still starts a non-recording span (its context propagates to
//! anything the handler emits); `docs/benchmarks.md` has the figures.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `tracing` | no | `TracingLayer`: deliveries inside `tracing` spans, correlation ids on the current `tracing` span |
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

mod context;
mod layer;
mod propagation;
mod traced;
#[cfg(feature = "tracing")]
mod tracing_layer;

pub use context::{current_trace_context, parent_context, trace_correlation_id};
pub use layer::OtelLayer;
pub use propagation::{TRACEPARENT, TRACESTATE, extract, extract_trace_context, inject};
pub use traced::{Traced, traced, traced_async};
#[cfg(feature = "tracing")]
pub use tracing_layer::TracingLayer;

/// The attribute keys of handler spans (see the [mapping](crate#span-and-attribute-mapping)).
pub mod attributes {
    /// `messaging.system`: always `nerve`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `messaging.operation.type`: always `process` for handler spans.
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// `messaging.destination.name`: the event type.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// `messaging.message.id`: the event id.
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// `messaging.message.conversation_id`: the correlation id.
    pub const MESSAGING_CONVERSATION_ID: &str = "messaging.message.conversation_id";
    /// `nerve.event.seq`: the bus-wide sequence number.
    pub const EVENT_SEQ: &str = "nerve.event.seq";
    /// `nerve.run_id`: the run the event belongs to.
    pub const RUN_ID: &str = "nerve.run_id";
    /// `nerve.lane`: the lane of its run.
    pub const LANE: &str = "nerve.lane";
    /// `nerve.subscription.id`: the subscription's id within its bus.
    pub const SUBSCRIPTION_ID: &str = "nerve.subscription.id";
    /// `nerve.subscription.name`: the subscription's name, when it has one.
    pub const SUBSCRIPTION_NAME: &str = "nerve.subscription.name";
    /// `nerve.handler.mode`: `inline`, `queued` or `async`.
    pub const HANDLER_MODE: &str = "nerve.handler.mode";
    /// `nerve.outcome`: how the delivery ended.
    pub const OUTCOME: &str = "nerve.outcome";
    /// `error.type`: the outcome of a failed delivery.
    pub const ERROR_TYPE: &str = "error.type";
}
