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
//! * `sdk_only/*`: the SDK alone starting, attaching and ending one span
//!   per iteration: the floor under any bridge that gives each delivery a
//!   span.
//! * `emit_in_span/*`: the same inside an active (sampled or unsampled)
//!   span, so the event carries trace context and the emit adds a span
//!   event; `always_on_no_emit_event` turns that span event off, to show
//!   its cost.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use nerve_core::Event;
use nerve_core::instrument::Instrument;
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

/// A default bus with one counting inline handler, and `instrument` if given.
fn bus(instrument: Option<Arc<dyn Instrument>>) -> Bus {
    let mut builder = Bus::builder();
    if let Some(instrument) = instrument {
        builder = builder.instrument(instrument);
    }
    let bus = builder.build().expect("valid settings");
    let counter = Arc::new(AtomicU64::new(0));
    bus.subscribe("bench.event", move |_: &Event| {
        black_box(&*counter).fetch_add(1, Ordering::Relaxed);
    })
    .expect("valid pattern");
    bus
}

fn emit(c: &mut Criterion) {
    let off = provider(Sampler::AlwaysOff);
    let on = provider(Sampler::AlwaysOn);
    let layer = |p: &SdkTracerProvider| OtelLayer::with_tracer(p.tracer("nerve"));
    let absent = bus(None);
    let no_provider = bus(Some(Arc::new(OtelLayer::new())));
    let always_off = bus(Some(Arc::new(layer(&off))));
    let always_on = bus(Some(Arc::new(layer(&on))));
    let always_on_no_emit_event = bus(Some(Arc::new(layer(&on).emit_events(false))));
    let data = serde_json::json!({"n": 1});

    let mut group = c.benchmark_group("emit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    for (name, bus) in [
        ("absent", &absent),
        ("no_provider", &no_provider),
        ("always_off", &always_off),
        ("always_on", &always_on),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| bus.emit("bench.event", data.clone()).expect("emit"));
        });
    }
    group.finish();

    // The floor under any bridge that gives each delivery a span: the SDK
    // starting, attaching and dropping one span, with nerve not involved.
    let mut group = c.benchmark_group("sdk_only");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    // The SDK's part of a dropped span: start and drop, no context.
    let tracer = off.tracer("bench");
    group.bench_function("always_off, start and drop only", |b| {
        b.iter(|| {
            let span = tracer
                .span_builder("nerve.handle")
                .with_kind(opentelemetry::trace::SpanKind::Consumer)
                .start_with_context(&tracer, &opentelemetry::Context::new());
            black_box(span);
        });
    });
    for (name, provider) in [("always_off", &off), ("always_on", &on)] {
        let tracer = provider.tracer("bench");
        group.bench_function(name, |b| {
            b.iter(|| {
                let span = tracer
                    .span_builder("nerve.handle")
                    .with_kind(opentelemetry::trace::SpanKind::Consumer)
                    .start_with_context(&tracer, &opentelemetry::Context::new());
                let cx = opentelemetry::Context::current_with_span(span);
                let _guard = cx.clone().attach();
                black_box(&cx);
            });
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
        ("absent", &absent, &on),
        ("always_off", &always_off, &off),
        ("always_on", &always_on, &on),
        // The `nerve.emit` span event's share of the above.
        ("always_on_no_emit_event", &always_on_no_emit_event, &on),
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

/// The ratio to absent, paired: rounds of `CHUNK` emits on the bus without
/// the bridge and `CHUNK` on each bus with it, back to back, so that both
/// sides of each ratio see the same machine (on a shared machine the
/// baseline alone drifts by 10 to 20 % between criterion runs). Prints the
/// median ratio and its quartiles over `ROUNDS` rounds.
fn paired() {
    const ROUNDS: usize = 201;
    const CHUNK: u32 = 20_000;
    let off = provider(Sampler::AlwaysOff);
    let on = provider(Sampler::AlwaysOn);
    let absent = bus(None);
    let buses = [
        ("no_provider", bus(Some(Arc::new(OtelLayer::new())))),
        (
            "always_off",
            bus(Some(Arc::new(OtelLayer::with_tracer(off.tracer("nerve"))))),
        ),
        (
            "always_on",
            bus(Some(Arc::new(OtelLayer::with_tracer(on.tracer("nerve"))))),
        ),
    ];
    let data = serde_json::json!({"n": 1});
    let time = |bus: &Bus| {
        let start = std::time::Instant::now();
        for _ in 0..CHUNK {
            bus.emit("bench.event", data.clone()).expect("emit");
        }
        start.elapsed().as_secs_f64() / f64::from(CHUNK)
    };
    // Warm up every bus (history rings full, caches warm).
    time(&absent);
    for (_, bus) in &buses {
        time(bus);
    }
    // The always-off bus again, emitting inside an (unsampled) span: the
    // event carries trace context and the handler span has a parent.
    // (A bus of its own: the history of the bus above stays free of events
    // with trace context.)
    let always_off_in_span = bus(Some(Arc::new(OtelLayer::with_tracer(off.tracer("nerve")))));
    let request = opentelemetry::Context::new().with_span(off.tracer("bench").start("request"));
    let in_span = |bus: &Bus| {
        let _guard = request.clone().attach();
        time(bus)
    };
    let mut ratios = vec![Vec::with_capacity(ROUNDS); buses.len() + 1];
    let mut base = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let a = time(&absent);
        base.push(a);
        for (i, (_, bus)) in buses.iter().enumerate() {
            ratios[i].push(time(bus) / a);
        }
        ratios[buses.len()].push(in_span(&always_off_in_span) / a);
    }
    let quartiles = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    let (_, b, _) = quartiles(&mut base);
    println!(
        "paired/absent: median {:.0} ns per emit over {ROUNDS} rounds of {CHUNK}",
        b * 1e9
    );
    let names = buses.iter().map(|(name, _)| *name);
    for (i, name) in names.chain(["always_off, inside a span"]).enumerate() {
        let (q1, m, q3) = quartiles(&mut ratios[i]);
        println!("paired/{name}: {m:.3} x absent (quartiles {q1:.3} to {q3:.3})");
    }
}

criterion_group!(benches, emit);

fn main() {
    // A filter (the first argument not starting with '-') that does not
    // name `paired` skips it, as criterion skips what a filter does not
    // match.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_none_or(|f| "paired".contains(f) || f.contains("paired"))
    {
        paired();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
