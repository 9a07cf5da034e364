//! What building one event costs, piece by piece.
//!
//! Run with `cargo bench -p nerve-core --bench event`; results and targets are
//! in `docs/benchmarks.md`.
//!
//! * `event_id/*`: one event id. `given clock` is the id alone for a time
//!   already read (the target: at most 15 ns); `new` reads the clock too, and
//!   `clock` is that read alone (`SystemTime::now`). `uuid v7 context` is what
//!   nerve did before, in the same run: `uuid::Uuid::new_v7` with a
//!   thread-local `uuid::ContextV7`, for a time already read.
//! * `build/*`: `Event::builder(..).data(..).build()` with the payload users
//!   emit (`json!({"i": n})`, made inside the loop as an emit makes it), and
//!   the same plus the correlation id a bus gives a root event; `shared json
//!   i` hands in an `Arc`'d payload instead (`EventBuilder::data_shared`).
//! * `correlation/*`: a fresh correlation id.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use nerve_core::{CorrelationId, Event, EventId, Timestamp, json};

thread_local! {
    static V7_CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

fn event_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_id");
    // The time advances by a millisecond every 10,000 ids, so both the
    // counter path and the reseed path are in the figure.
    let start = Timestamp::now().as_micros();
    let mut n = 0_i64;
    group.bench_function("given clock", |b| {
        b.iter(|| {
            n += 1;
            EventId::for_timestamp(Timestamp::from_micros(start + n / 10))
        });
    });
    group.bench_function("new", |b| b.iter(EventId::new));
    group.bench_function("clock", |b| b.iter(SystemTime::now));
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    group.bench_function("uuid v7 context", |b| {
        b.iter(|| {
            let ts = uuid::Timestamp::from_unix(
                uuid::timestamp::context::ThreadLocalContext::new(&V7_CONTEXT),
                since_epoch.as_secs(),
                since_epoch.subsec_nanos(),
            );
            uuid::Uuid::new_v7(black_box(ts))
        });
    });
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    let mut n = 0_u64;
    group.bench_function("json i", |b| {
        b.iter(|| {
            n += 1;
            Event::builder(black_box("user.login"))
                .data(json!({"i": n}))
                .build()
        });
    });
    group.bench_function("json i + root correlation", |b| {
        b.iter(|| {
            n += 1;
            let e = Event::builder(black_box("user.login"))
                .data(json!({"i": n}))
                .build()
                .unwrap();
            let id = CorrelationId::from(e.event_id());
            e.with_correlation_id(id)
        });
    });
    let shared = Arc::new(json!({"i": 1}));
    group.bench_function("shared json i", |b| {
        b.iter(|| {
            Event::builder(black_box("user.login"))
                .data_shared(Arc::clone(&shared))
                .build()
        });
    });
    group.bench_function("null", |b| {
        b.iter(|| Event::builder(black_box("user.login")).build());
    });
    group.finish();
}

fn correlation(c: &mut Criterion) {
    let mut group = c.benchmark_group("correlation");
    group.bench_function("generate", |b| b.iter(CorrelationId::generate));
    let id = EventId::new();
    group.bench_function("from event id", |b| {
        b.iter(|| CorrelationId::from(black_box(id)));
    });
    group.finish();
}

criterion_group!(benches, event_id, build, correlation);
criterion_main!(benches);
