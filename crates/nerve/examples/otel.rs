//! One trace from a request through every handler: the first events of the
//! demo's extraction run, printed by OpenTelemetry's stdout exporter.
//!
//! Run with `cargo run -p nerve --features otel --example otel`.
//!
//! An SDK tracer provider is installed with a stdout exporter; the bus gets
//! an `OtelLayer`. The run is started inside a span `extraction run`; each
//! specimen's events go to three handlers: an inline one (metrics), a queued
//! one (the archive, on its own thread) and an async one (the uploader, on a
//! tokio task), which emits a nested event. Every `nerve.handle` span printed
//! has the same trace id, and its parent is the span that emitted its event.

use std::error::Error;

use nerve::otel::OtelLayer;
use nerve::{Bus, Event, HandlerError, Subscribe, json};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let bus = Bus::builder()
        .instrument(OtelLayer::new().correlation_from_trace(true))
        .build()?;

    bus.subscribe_with(
        "specimen.*",
        |e: &Event| println!("[metrics, inline] {} #{}", e.event_type(), e.seq()),
        Subscribe::new().name("metrics"),
    )?;
    bus.subscribe_with(
        "specimen.completed",
        |e: &Event| println!("[archive, queued] {}", e.data()["specimen"]),
        Subscribe::new().name("archive").queued(64),
    )?;
    let uploader = bus.clone();
    bus.subscribe_async_with(
        "specimen.completed",
        move |e: Event| {
            let bus = uploader.clone();
            async move {
                tokio::task::yield_now().await;
                // Emitted inside this handler's span: same trace, one level down.
                bus.emit(
                    "specimen.uploaded",
                    json!({"specimen": e.data()["specimen"]}),
                )
                .map_err(HandlerError::new)?;
                Ok::<_, HandlerError>(())
            }
        },
        Subscribe::new().name("uploader"),
    )?;

    let tracer = provider.tracer("herbarium");
    let trace_id = tracer.in_span("extraction run", |cx| -> Result<String, Box<dyn Error>> {
        bus.emit(
            "extraction.started",
            json!({"run_id": "run-healthy", "specimens": 3}),
        )?;
        for n in 1..=3 {
            bus.emit("specimen.processing", json!({"specimen": n}))?;
            bus.emit(
                "specimen.completed",
                json!({"specimen": n, "confidence": 0.93}),
            )?;
        }
        Ok(format!("{:032x}", cx.span().span_context().trace_id()))
    })?;
    bus.flush().await;
    bus.shutdown().await;
    provider.force_flush()?;

    println!("\nall spans above belong to trace {trace_id}");
    println!("(each event's correlation id is that trace id: correlation_from_trace(true))");
    provider.shutdown()?;
    Ok(())
}
