//! Carrying an event's trace context over HTTP headers or any text map.
//!
//! The format is W3C Trace Context (`traceparent`, `tracestate`), written by
//! hand in [`nerve_core::trace`] because the API crate leaves the W3C
//! propagator to the SDK, which this crate does not depend on.

use nerve_core::Event;
use nerve_core::trace::TraceContext;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;

use crate::context::span_context_of;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

/// Writes `event`'s trace context into `headers` as `traceparent` (and
/// `tracestate` when there is one); writes nothing when the event carries
/// none. Returns whether it wrote.
///
/// ```
/// use std::collections::HashMap;
/// use nerve::{Event, trace::TraceContext};
/// let tc = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None)?;
/// let event = Event::builder("order.placed").trace_context(tc.clone()).build()?;
/// let mut headers = HashMap::new();
/// assert!(nerve::otel::inject(&event, &mut headers));
/// assert_eq!(nerve::otel::extract_trace_context(&headers)?, Some(tc));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inject(event: &Event, headers: &mut dyn Injector) -> bool {
    let Some(tc) = event.trace_context() else {
        return false;
    };
    headers.set(TRACEPARENT, tc.traceparent());
    if let Some(state) = tc.tracestate() {
        headers.set(TRACESTATE, state.to_owned());
    }
    true
}

/// Reads the trace context in `headers`: `Ok(None)` when there is no
/// `traceparent`, an error when there is one that is malformed.
///
/// Put it on an event with
/// [`EventBuilder::trace_context`](nerve_core::EventBuilder::trace_context)
/// so that the handlers' spans continue the caller's trace.
///
/// # Errors
///
/// A [`TraceContextError`](nerve_core::trace::TraceContextError) naming what
/// is wrong with the `traceparent` value.
pub fn extract_trace_context(
    headers: &dyn Extractor,
) -> Result<Option<TraceContext>, nerve_core::trace::TraceContextError> {
    match headers.get(TRACEPARENT) {
        None => Ok(None),
        Some(tp) => TraceContext::parse(tp, headers.get(TRACESTATE)).map(Some),
    }
}

/// The OpenTelemetry context of the remote span named by `headers` (an empty
/// context when there is no valid `traceparent`): start server spans in it.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::trace::TraceContextExt;
/// let headers = HashMap::from([(
///     "traceparent".to_owned(),
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
/// )]);
/// let cx = nerve::otel::extract(&headers);
/// assert!(cx.span().span_context().is_remote());
/// ```
pub fn extract(headers: &dyn Extractor) -> Context {
    match extract_trace_context(headers) {
        Ok(Some(tc)) => Context::new().with_remote_span_context(span_context_of(&tc, true)),
        _ => Context::new(),
    }
}
