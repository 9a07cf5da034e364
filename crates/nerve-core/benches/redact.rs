//! Redaction benchmarks: what redacting one 1 KiB JSON line costs with every
//! detector on, against a naive redactor in the same run.
//!
//! Run with `cargo bench -p nerve-core --bench redact --features redact`;
//! results and the target (at most 20 µs per 1 KiB line) are in
//! `docs/benchmarks.md`.
//!
//! * `line/*`: `Redactor::redact_str` over a serialized event, 1,024 bytes.
//!   `clean` holds ids, times, versions and prose but no personal data;
//!   `pii` holds eight findings (email, card, phone, IPv4, IBAN, JWT, URL
//!   password, secret assignment).
//! * `naive/*`: the same lines through one `Regex::replace_all` per
//!   detector pattern (the same 25 patterns, no validators, no `RegexSet`).
//! * `event/*`: `Redactor::redact_event` on the events those lines are
//!   made from (data, source and correlation id; the clean event is returned
//!   without a copy).
//! * `worst/*`: `Redactor::redact_str` over 64 KiB lines of the worst shapes
//!   found (`tests/redact/shapes.rs`); the target is at most 5 ms each.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use nerve_core::redact::{Detector, Redactor};
use nerve_core::{Event, json};
use regex::Regex;

// The detector patterns themselves, so that the naive redactor runs exactly
// what the `Redactor` runs, minus the `RegexSet` and the validators.
#[allow(
    dead_code,
    reason = "the bench uses the table, not every constant by name"
)]
#[path = "../src/redact/patterns.rs"]
mod patterns;

// The worst shapes, shared with the `cost` test.
#[path = "../tests/redact/shapes.rs"]
mod shapes;

/// The length of each benchmarked line.
const LINE_LEN: usize = 1024;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
    eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
    SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

/// Short runs: the whole file should finish in about a minute on 2 cores.
fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
}

/// An event whose JSON line is exactly [`LINE_LEN`] bytes: `data` padded
/// with harmless prose.
fn event(data: serde_json::Value) -> (Event, String) {
    let build = |note: &str| {
        let mut data = data.clone();
        data["note"] = note.into();
        Event::builder("checkout.order.placed")
            .event_id("01936d5e-8a3c-7b21-9f4e-2d6c8a1b3e57".parse().unwrap())
            .timestamp(nerve_core::Timestamp::parse_rfc3339("2026-11-23T09:01:32.123456Z").unwrap())
            .source("checkout-service")
            .correlation_id("0b7a4f9e-4b2e-4f7c-9d1a-3c5e8f2a6b10")
            .run_id("run-2026-11-23-0007")
            .data(data)
            .build()
            .unwrap()
    };
    let prose = "the order was accepted by the payment provider and queued for \
                 fulfilment; the warehouse confirms stock for every line item and \
                 the courier slot is reserved until the end of the business day ";
    let bare = serde_json::to_string(&build("")).unwrap().len();
    let note: String = prose.chars().cycle().take(LINE_LEN - bare).collect();
    let event = build(&note);
    let line = serde_json::to_string(&event).unwrap();
    assert_eq!(line.len(), LINE_LEN);
    (event, line)
}

fn clean() -> (Event, String) {
    event(json!({
        "order_id": "ord_20261123_000417",
        "customer_id": "cus-7f3a9b21",
        "request_id": "a3f1c2d4-5b6e-4f70-8a9b-0c1d2e3f4a5b",
        "created_at": "2026-11-23T09:01:30.004Z",
        "client_ts": 1_732_356_000_123_u64,
        "items": [
            {"sku": "SKU-10442", "qty": 2, "price_cents": 1299},
            {"sku": "SKU-20871", "qty": 1, "price_cents": 4599},
        ],
        "total_cents": 7197,
        "currency": "EUR",
        "app_version": "v10.0.1-beta.2",
        "build_sha": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) nerve-bench/1.2.3",
    }))
}

fn pii() -> (Event, String) {
    event(json!({
        "order_id": "ord_20261123_000417",
        "email": "alice.martin@example.com",
        "card": "4111 1111 1111 1111",
        "phone": "+44 20 7946 0958",
        "client_ip": "203.0.113.9",
        "iban": "DE89370400440532013000",
        "auth": format!("Bearer {JWT}"),
        "db": "postgres://app:s3cr3t@db.internal:5432/orders",
        "debug": "retry with api_key=9f8e7d6c5b4a3928",
        "created_at": "2026-11-23T09:01:30.004Z",
        "total_cents": 7197,
        "app_version": "v10.0.1-beta.2",
    }))
}

/// One `replace_all` per pattern, no validators: what a first attempt at
/// redaction looks like.
struct Naive(Vec<(Regex, &'static str)>);

impl Naive {
    fn new() -> Self {
        Self(
            patterns::ALL
                .iter()
                .zip(Detector::ALL)
                .map(|(p, d)| (Regex::new(&patterns::ascii(p)).unwrap(), d.token()))
                .collect(),
        )
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (regex, token) in &self.0 {
            if let std::borrow::Cow::Owned(replaced) = regex.replace_all(&out, *token) {
                out = replaced;
            }
        }
        out
    }
}

fn redact(c: &mut Criterion) {
    let redactor = Redactor::default();
    let naive = Naive::new();
    let (clean_event, clean_line) = clean();
    let (pii_event, pii_line) = pii();
    assert_eq!(redactor.redact_str(&clean_line), clean_line);
    let redacted = redactor.redact_str(&pii_line);
    assert_eq!(redacted.matches("[REDACTED_").count(), 8, "{redacted}");
    // What the naive redactor gets wrong, for the write-up: without
    // validators it takes timestamps, hashes and versions for data.
    let naive_clean = naive.redact(&clean_line);
    eprintln!(
        "naive redactor: {} false findings in the clean line: {naive_clean}",
        naive_clean.matches("[REDACTED_").count()
    );

    let mut group = c.benchmark_group("redact");
    short(&mut group);
    group.throughput(Throughput::Bytes(LINE_LEN as u64));
    group.bench_function("line/clean", |b| {
        b.iter(|| redactor.redact_str(black_box(&clean_line)).len());
    });
    group.bench_function("line/pii", |b| {
        b.iter(|| redactor.redact_str(black_box(&pii_line)).len());
    });
    group.bench_function("naive/clean", |b| {
        b.iter(|| naive.redact(black_box(&clean_line)).len());
    });
    group.bench_function("naive/pii", |b| {
        b.iter(|| naive.redact(black_box(&pii_line)).len());
    });
    group.bench_function("event/clean", |b| {
        b.iter(|| redactor.redact_event(black_box(&clean_event)));
    });
    group.bench_function("event/pii", |b| {
        b.iter(|| redactor.redact_event(black_box(&pii_event)));
    });
    group.finish();
}

fn worst(c: &mut Criterion) {
    let redactor = Redactor::default();
    let mut group = c.benchmark_group("worst");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    group.throughput(Throughput::Bytes(shapes::LINE_LEN as u64));
    for (name, line) in shapes::shapes() {
        group.bench_function(name, |b| {
            b.iter(|| redactor.redact_str(black_box(&line)).len());
        });
    }
    group.finish();
}

criterion_group!(benches, redact, worst);
criterion_main!(benches);
