//! Converting between OpenTelemetry span contexts and the trace context
//! nerve events carry.

use nerve_core::Event;
use nerve_core::trace::TraceContext;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The trace context of the span in `cx`, if it has a valid one.
pub(crate) fn trace_context_of(cx: &Context) -> Option<TraceContext> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    TraceContext::new(
        sc.trace_id().to_bytes(),
        sc.span_id().to_bytes(),
        sc.trace_flags().to_u8(),
        Some(state.as_str()),
    )
    .ok()
}

/// Whether the span current in `cx` is the one `tc` names.
pub(crate) fn is_span_of(cx: &Context, tc: &TraceContext) -> bool {
    let span = cx.span();
    let sc = span.span_context();
    sc.span_id().to_bytes() == tc.span_id() && sc.trace_id().to_bytes() == tc.trace_id()
}

/// The OpenTelemetry span context an event's trace context names.
pub(crate) fn span_context_of(tc: &TraceContext, remote: bool) -> SpanContext {
    let state = tc
        .tracestate()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(tc.trace_id()),
        SpanId::from_bytes(tc.span_id()),
        TraceFlags::new(tc.flags()),
        remote,
        state,
    )
}

/// The trace context of the span current on this thread, if there is one
/// (what the bus records on an event emitted here).
pub fn current_trace_context() -> Option<TraceContext> {
    Context::map_current(trace_context_of)
}

/// The current trace id as 32 lowercase hex characters, or `None` outside a
/// span: a correlation id that every service in the trace agrees on.
///
/// ```
/// assert_eq!(nerve::otel::trace_correlation_id(), None);
/// ```
pub fn trace_correlation_id() -> Option<String> {
    Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| format!("{:032x}", sc.trace_id()))
    })
}

/// The context to start a span in that continues `event`'s trace: a
/// context whose (non-recording) span is the one the event was emitted in,
/// or an empty context when the event carries no trace context.
///
/// Useful for work an event causes outside a handler, for example in a
/// stream consumer:
///
/// ```
/// use opentelemetry::trace::{TraceContextExt, Tracer};
/// # let event = nerve::Event::new("a.b", 1)?;
/// let parent = nerve::otel::parent_context(&event);
/// let tracer = opentelemetry::global::tracer("app");
/// let _span = tracer.start_with_context("process", &parent);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parent_context(event: &Event) -> Context {
    match event.trace_context() {
        Some(tc) => Context::new().with_remote_span_context(span_context_of(tc, false)),
        None => Context::new(),
    }
}
