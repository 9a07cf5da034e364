//! The `tracing` instrument.

use nerve_core::Event;
use nerve_core::instrument::{DeliveryOutcome, HandleScope, HandlerInfo, Instrument, Run};
use tracing::field::Empty;

/// Bridges a bus to the `tracing` crate: give it to
/// `Bus::builder().instrument`.
///
/// * Every delivery runs inside an `INFO` span named `nerve.handle` with the
///   fields `event_type`, `event_id`, `seq`, `correlation_id`,
///   `subscription` and `mode`, and, once it ends, `outcome` (and `error` on
///   failure). Everything a handler logs with `tracing` carries them; with
///   `tracing-opentelemetry` installed the span also becomes an
///   OpenTelemetry span.
/// * Every emit records the event's correlation id on the current `tracing`
///   span, in its field `correlation_id` if the span declares one
///   (`tracing::info_span!("request", correlation_id = tracing::field::Empty)`):
///   `tracing` keeps only the fields a span declared when it was made.
///
/// When no subscriber is interested in `INFO` spans of target `nerve`, the
/// spans are disabled and cost a level check.
///
/// ```
/// let bus = nerve::Bus::builder()
///     .instrument(nerve::otel::TracingLayer::new())
///     .build()?;
/// bus.subscribe("order.placed", |_| {
///     // Logged with event_type, event_id, correlation_id, ... of the event.
///     tracing::info!("reserving stock");
/// })?;
/// bus.emit("order.placed", nerve::json!({"id": 7}))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TracingLayer {
    _private: (),
}

impl TracingLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Instrument for TracingLayer {
    fn emitted(&self, event: &Event) {
        if let Some(id) = event.correlation_id() {
            tracing::Span::current().record("correlation_id", id.as_str());
        }
    }

    fn handle(&self, event: &Event, handler: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
        let span = delivery_span(event, handler)?;
        Some(Box::new(TracingScope { span }))
    }

    fn deliver(&self, event: &Event, handler: &HandlerInfo<'_>, run: Run<'_>) {
        let Some(span) = delivery_span(event, handler) else {
            run(&mut |_| {});
            return;
        };
        let _entered = span.enter();
        run(&mut |outcome| record_outcome(&span, outcome));
    }
}

/// A delivery's span, `None` when no subscriber wants it.
fn delivery_span(event: &Event, handler: &HandlerInfo<'_>) -> Option<tracing::Span> {
    let span = tracing::info_span!(
        target: "nerve",
        "nerve.handle",
        event_type = event.event_type(),
        event_id = %event.event_id(),
        seq = event.seq(),
        correlation_id = event.correlation_id().map(|c| c.as_str()),
        subscription = handler.name,
        subscription_id = handler.subscription_id,
        mode = handler.mode.as_str(),
        outcome = Empty,
        error = Empty,
    );
    (!span.is_disabled()).then_some(span)
}

fn record_outcome(span: &tracing::Span, outcome: &DeliveryOutcome<'_>) {
    span.record("outcome", outcome.as_str());
    if let Some(error) = outcome.error() {
        span.record("error", error.as_str());
    }
}

struct TracingScope {
    span: tracing::Span,
}

impl HandleScope for TracingScope {
    fn in_scope(&self, f: &mut dyn FnMut()) {
        let _entered = self.span.enter();
        f();
    }

    fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>) {
        record_outcome(&self.span, outcome);
    }
}
