//! What the OpenTelemetry bridge costs: one emit to one inline handler on a
//! default bus, with the bridge absent, and on with an SDK provider whose
//! sampler is always-off and always-on, all in one run.
//!
//! Run with `cargo bench -p nerve-otel --bench otel`; results are in
//! `docs/benchmarks.md` (target: always-off within 1.5× of absent).
//!
//! * `emit/absent`: no instrument on the bus.
//! * `emit/no_provider`: `OtelLayer::new()` with no global provider (the
//!   no-op tracer).
//! * `emit/always_off`: an SDK provider that samples nothing.
//! * `emit/always_on`: an SDK provider that samples everything, exporting
//!   to an exporter that discards (so the figure is nerve's and the SDK's
//!   span work, not an exporter's I/O).
//! * `emit_in_span/*`: the same inside an active (sampled or unsampled)
//!   span, so the event carries trace context and the emit adds a span
//!   event; `always_on_no_emit_event` turns that span event off, to show
//!   its cost.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nerve_core::Event;
use nerve_otel::OtelLayer;
use nerve_router::Bus;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};

/// Discards spans: the bench measures span work, not export I/O.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn provider(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(Discard)
        .with_sampler(sampler)
        .build()
}

fn bus_with(
    layer: Option<Box<dyn FnOnce(nerve_router::BusBuilder) -> nerve_router::BusBuilder>>,
) -> (Bus, Arc<AtomicU64>) {
    let mut builder = Bus::builder();
    if let Some(add) = layer {
        builder = add(builder);
    }
    let bus = builder.build().expect("valid settings");
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    bus.subscribe("bench.event", move |_: &Event| {
        black_box(&*c).fetch_add(1, Ordering::Relaxed);
    })
    .expect("valid pattern");
    (bus, counter)
}

fn emit(c: &mut Criterion) {
    let off = provider(Sampler::AlwaysOff);
    let on = provider(Sampler::AlwaysOn);
    let variants: Vec<(&str, Bus)> = vec![
        ("absent", bus_with(None).0),
        (
            "no_provider",
            bus_with(Some(Box::new(|b| b.instrument(OtelLayer::new())))).0,
        ),
        ("always_off", {
            let tracer = off.tracer("nerve");
            bus_with(Some(Box::new(move |b| {
                b.instrument(OtelLayer::with_tracer(tracer))
            })))
            .0
        }),
        ("always_on", {
            let tracer = on.tracer("nerve");
            bus_with(Some(Box::new(move |b| {
                b.instrument(OtelLayer::with_tracer(tracer))
            })))
            .0
        }),
    ];
    let data = serde_json::json!({"n": 1});

    let mut group = c.benchmark_group("emit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    for (name, bus) in &variants[..4] {
        group.bench_function(*name, |b| {
            b.iter(|| bus.emit("bench.event", data.clone()).expect("emit"));
        });
    }
    group.finish();

    // Inside a span: the event carries trace context, the handler span has
    // a parent, and a recording parent gets a `nerve.emit` span event.
    let mut group = c.benchmark_group("emit_in_span");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    for (name, bus, provider) in [
        ("absent", &variants[0].1, &on),
        ("always_off", &variants[2].1, &off),
        ("always_on", &variants[3].1, &on),
        // The `nerve.emit` span event's share of the above.
        ("always_on_no_emit_event", &variants[4].1, &on),
    ] {
        let tracer = provider.tracer("bench");
        let span = tracer.start("request");
        let cx = opentelemetry::Context::current_with_span(span);
        let _guard = cx.clone().attach();
        group.bench_function(name, |b| {
            b.iter(|| bus.emit("bench.event", data.clone()).expect("emit"));
        });
        drop(_guard);
        cx.span().end();
    }
    group.finish();
}

criterion_group!(benches, emit);
criterion_main!(benches);
