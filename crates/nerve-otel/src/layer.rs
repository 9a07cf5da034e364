//! The OpenTelemetry instrument.

use std::fmt;

use nerve_core::Event;
use nerve_core::instrument::{
    DeliveryOutcome, HandleScope, HandlerInfo, HandlerMode, Instrument, Run,
};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

use crate::attributes as attr;
use crate::context::{is_span_of, parent_context, trace_context_of};

/// Bridges a bus to OpenTelemetry: give it to `Bus::builder().instrument`.
///
/// | moment | what it does |
/// |--------|--------------|
/// | emit, inside a span | records the span's `traceparent`/`tracestate` on the event (unless the event already carries one), and adds a span event `nerve.emit {event_type}` to the span if it is recording |
/// | emit, outside any span | nothing (the event carries no trace context) |
/// | each delivery | a span `nerve.handle {event_type}`, kind `Consumer`, child of the event's trace context (a root span when it has none), current while the handler runs (every poll, for async handlers), ended with the outcome. An inline handler's span is started in the emitter's own context (so its baggage and other values reach the handler); a queued or async handler's, in a context rebuilt from the event's trace context, which is all that crosses to another thread |
///
/// The attributes are listed in the [crate docs](crate#span-and-attribute-mapping).
///
/// | setting | default |
/// |---------|---------|
/// | tracer | [`OtelLayer::new`]: the global tracer provider's tracer named `nerve`, taken when the layer is made |
/// | [`correlation_from_trace`](Self::correlation_from_trace) | off |
/// | [`emit_events`](Self::emit_events) | on |
///
/// ```
/// use nerve::otel::OtelLayer;
/// let bus = nerve::Bus::builder()
///     .instrument(OtelLayer::new().correlation_from_trace(true))
///     .build()?;
/// # Ok::<(), nerve::BuildError>(())
/// ```
pub struct OtelLayer<T = BoxedTracer> {
    tracer: T,
    correlation_from_trace: bool,
    emit_events: bool,
}

impl OtelLayer<BoxedTracer> {
    /// A layer using the global tracer provider's tracer `nerve`, as
    /// installed now (install the provider first: a layer made before keeps
    /// the no-op tracer).
    pub fn new() -> Self {
        let scope = InstrumentationScope::builder("nerve")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self::with_tracer(global::tracer_with_scope(scope))
    }
}

impl Default for OtelLayer<BoxedTracer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> OtelLayer<T>
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// A layer using `tracer` (for example `provider.tracer("nerve")` of an
    /// SDK provider, which avoids the boxing of the global tracer).
    pub fn with_tracer(tracer: T) -> Self {
        Self {
            tracer,
            correlation_from_trace: false,
            emit_events: true,
        }
    }

    /// Whether an event with no explicit and no ambient correlation id takes
    /// the trace id (32 lowercase hex characters) as its correlation id,
    /// rather than a generated one. Events emitted outside a span are not
    /// affected.
    #[must_use]
    pub fn correlation_from_trace(mut self, on: bool) -> Self {
        self.correlation_from_trace = on;
        self
    }

    /// Whether emitting inside a recording span adds the span event
    /// `nerve.emit {event_type}` (with the event's id, type and sequence
    /// number) to that span.
    #[must_use]
    pub fn emit_events(mut self, on: bool) -> Self {
        self.emit_events = on;
        self
    }
}

impl<T> fmt::Debug for OtelLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelLayer")
            .field("correlation_from_trace", &self.correlation_from_trace)
            .field("emit_events", &self.emit_events)
            .finish_non_exhaustive()
    }
}

impl<T> Instrument for OtelLayer<T>
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    fn prepare(&self, mut event: Event) -> Event {
        // The bus applies an ambient id before `prepare` (the trait's
        // contract), so an event still without one here has neither an
        // explicit nor an ambient id.
        let wants_correlation = self.correlation_from_trace && event.correlation_id().is_none();
        if event.trace_context().is_none() {
            let Some(tc) = Context::map_current(trace_context_of) else {
                return event;
            };
            event = event.with_trace_context(Some(tc));
        }
        if wants_correlation {
            if let Some(id) = event.trace_context().map(|tc| tc.trace_id_hex()) {
                event = event.with_correlation_id(id);
            }
        }
        event
    }

    fn emitted(&self, event: &Event) {
        if !self.emit_events || event.trace_context().is_none() {
            return;
        }
        Context::map_current(|cx| {
            let span = cx.span();
            if span.is_recording() {
                span.add_event(
                    format!("nerve.emit {}", event.event_type()),
                    vec![
                        KeyValue::new(
                            attr::MESSAGING_DESTINATION_NAME,
                            event.event_type().to_owned(),
                        ),
                        KeyValue::new(attr::MESSAGING_MESSAGE_ID, event.event_id().to_string()),
                        KeyValue::new(attr::EVENT_SEQ, seq_value(event.seq())),
                    ],
                );
            }
        });
    }

    fn handle(&self, event: &Event, handler: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
        Some(Box::new(self.start(event, handler)?))
    }

    fn deliver(&self, event: &Event, handler: &HandlerInfo<'_>, run: Run<'_>) {
        // The scope on the stack: no allocation and no dynamic call per
        // sync delivery beyond the bus's one call to `deliver`.
        match self.start(event, handler) {
            None => run(&mut |_| {}),
            Some(OtelScope {
                cx,
                recording: true,
            }) => {
                let _guard = cx.clone().attach();
                run(&mut |outcome| end(&cx, outcome));
            }
            Some(OtelScope {
                cx,
                recording: false,
            }) => {
                // Nothing left to do with a dropped span's context after
                // the call: hand it to the context stack rather than copy.
                let _guard = cx.attach();
                run(&mut |_| {});
            }
        }
    }
}

impl<T> OtelLayer<T>
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// Starts a delivery's span (`None`: nothing to record or propagate).
    fn start(&self, event: &Event, handler: &HandlerInfo<'_>) -> Option<OtelScope> {
        let parent = match event.trace_context() {
            // An inline handler runs on the emitting thread, still inside
            // the span the event was emitted in: its parent is that context
            // itself (no new context to allocate, and the emitter's other
            // context values, baggage say, reach the handler too).
            Some(tc) if handler.mode == HandlerMode::Inline => {
                Context::map_current(|cx| is_span_of(cx, tc).then(|| cx.clone()))
                    .unwrap_or_else(|| parent_context(event))
            }
            _ => parent_context(event),
        };
        // The sampler sees the static name `nerve.handle` (and the kind):
        // formatting the full name for a span that is then dropped was a
        // fifth of the bridge's cost. A recording span is renamed at once.
        let builder = self
            .tracer
            .span_builder(HANDLE_SPAN)
            .with_kind(SpanKind::Consumer);
        let mut span = self.tracer.build_with_context(builder, &parent);
        if !span.is_recording() {
            if !span.span_context().is_valid() {
                // The no-op tracer (no provider installed), with no parent:
                // nothing to record and nothing to propagate.
                return None;
            }
            // A dropped span still propagates its context (trace id and the
            // unsampled flag) to whatever the handler emits, without the
            // boxing and locking of a live span. Under a parent, the
            // parent's context propagates the same trace and flags (and no
            // one records either span id), so it serves as it is.
            let cx = if parent.has_active_span() {
                parent
            } else {
                parent.with_remote_span_context(span.span_context().clone())
            };
            return Some(OtelScope {
                cx,
                recording: false,
            });
        }
        span.update_name(format!("{HANDLE_SPAN} {}", event.event_type()));
        span.set_attributes(handler_attributes(event, handler));
        Some(OtelScope {
            cx: parent.with_span(span),
            recording: true,
        })
    }
}

/// Ends a recording delivery span with the handler's outcome.
fn end(cx: &Context, outcome: &DeliveryOutcome<'_>) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(attr::OUTCOME, outcome.as_str()));
    if let Some(error) = outcome.error() {
        span.set_attribute(KeyValue::new(attr::ERROR_TYPE, outcome.as_str()));
        span.set_status(Status::error(error));
    }
    span.end();
}

/// The name of handler spans, before the event type is appended.
const HANDLE_SPAN: &str = "nerve.handle";

fn seq_value(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn handler_attributes(event: &Event, handler: &HandlerInfo<'_>) -> Vec<KeyValue> {
    let mut kv = Vec::with_capacity(12);
    kv.push(KeyValue::new(attr::MESSAGING_SYSTEM, "nerve"));
    kv.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "process"));
    kv.push(KeyValue::new(
        attr::MESSAGING_DESTINATION_NAME,
        event.event_type().to_owned(),
    ));
    kv.push(KeyValue::new(
        attr::MESSAGING_MESSAGE_ID,
        event.event_id().to_string(),
    ));
    if let Some(c) = event.correlation_id() {
        kv.push(KeyValue::new(
            attr::MESSAGING_CONVERSATION_ID,
            c.as_str().to_owned(),
        ));
    }
    kv.push(KeyValue::new(attr::EVENT_SEQ, seq_value(event.seq())));
    if let Some(run) = event.run_id() {
        kv.push(KeyValue::new(attr::RUN_ID, run.to_owned()));
    }
    if let Some(lane) = event.lane() {
        kv.push(KeyValue::new(attr::LANE, lane.to_owned()));
    }
    kv.push(KeyValue::new(
        attr::SUBSCRIPTION_ID,
        seq_value(handler.subscription_id),
    ));
    if let Some(name) = handler.name {
        kv.push(KeyValue::new(attr::SUBSCRIPTION_NAME, name.to_owned()));
    }
    kv.push(KeyValue::new(attr::HANDLER_MODE, handler.mode.as_str()));
    kv
}

/// One delivery's span and the context to run the handler in: on the stack
/// for a sync delivery, boxed as the scope of an async one.
struct OtelScope {
    cx: Context,
    /// Whether the span records (a dropped span is neither annotated nor
    /// ended: dropping it is all there is to do).
    recording: bool,
}

impl HandleScope for OtelScope {
    fn in_scope(&self, f: &mut dyn FnMut()) {
        let _guard = self.cx.clone().attach();
        f();
    }

    fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>) {
        if self.recording {
            end(&self.cx, outcome);
        }
    }
}
