//! The metrics consumer on a real bus, on events with known timestamps.

use std::sync::{Arc, Mutex};

use nerve_consumers::run_metrics::names;
use nerve_consumers::{MetricsConsumer, RunMetrics};
use nerve_core::metrics::InMemoryMetrics;
use nerve_core::{Event, Timestamp};
use nerve_router::Bus;
use serde_json::{Value, json};

/// An event at `secs` seconds into the run.
fn at(secs: f64, event_type: &str, data: Value) -> Event {
    #[allow(clippy::cast_possible_truncation)]
    let micros = 1_760_000_000_000_000 + (secs * 1e6) as i64;
    Event::builder(event_type)
        .data(data)
        .timestamp(Timestamp::from_micros(micros))
        .build()
        .unwrap()
}

#[test]
fn a_run_reports_counts_rates_throughput_eta_and_latency() {
    let bus = Bus::new();
    let backend = InMemoryMetrics::new();
    let metrics = MetricsConsumer::builder()
        .metrics(backend.clone())
        .snapshot_every(5)
        .build()
        .unwrap();
    metrics.attach(&bus).unwrap();
    let snapshots = Arc::new(Mutex::new(Vec::new()));
    let log = snapshots.clone();
    bus.subscribe("metrics.snapshot", move |e: &Event| {
        log.lock().unwrap().push(e.decode::<RunMetrics>().unwrap());
    })
    .unwrap();

    bus.emit_event(at(
        0.0,
        "extraction.started",
        json!({"run_id": "r1", "total_specimens": 40}),
    ))
    .unwrap();
    // Ten items, one every 3 s, each taking 2 s (i ms more for item i);
    // items 4 and 8 fail.
    for i in 1..=10_u32 {
        let start = f64::from(i) * 3.0 - 2.0;
        let id = format!("s{i}");
        bus.emit_event(at(start, "specimen.processing", json!({"specimen_id": id})))
            .unwrap();
        let outcome = if i % 4 == 0 {
            "specimen.failed"
        } else {
            "specimen.completed"
        };
        bus.emit_event(at(
            start + 2.0 + f64::from(i) / 1e3,
            outcome,
            json!({"specimen_id": id}),
        ))
        .unwrap();
    }

    let m = metrics.snapshot().unwrap();
    assert_eq!(m.run_id.as_deref(), Some("r1"));
    assert_eq!((m.processed, m.succeeded, m.failed), (10, 8, 2));
    assert_eq!(m.total, Some(40));
    assert!((m.success_rate - 0.8).abs() < 1e-9);
    // The last outcome is at 30.01 s: 10 items in 30.01 s.
    assert!((m.elapsed_seconds - 30.01).abs() < 1e-6, "{m:?}");
    assert!((m.throughput_per_minute - 10.0 / 30.01 * 60.0).abs() < 1e-6);
    let eta = m.eta_seconds.unwrap();
    assert!((eta - 30.0 * 30.01 / 10.0).abs() < 1e-6, "{eta}");
    assert_eq!(m.latency.count, 10);
    assert!((m.latency.p50_ms - 2005.0).abs() < 1e-3, "{:?}", m.latency);
    assert!((m.latency.p90_ms - 2009.0).abs() < 1e-3);
    assert!((m.latency.max_ms - 2010.0).abs() < 1e-3);
    assert!(!m.ended);

    // Snapshots every 5 items, through the bus.
    let snapshots = snapshots.lock().unwrap();
    let processed: Vec<u64> = snapshots.iter().map(|s| s.processed).collect();
    assert_eq!(processed, [5, 10]);
    assert_eq!(snapshots[1], m);

    // And through the metrics backend.
    let run = [("run_id", "r1")];
    assert_eq!(
        backend.counter_value(
            names::ITEMS_TOTAL,
            &[("run_id", "r1"), ("outcome", "failed")]
        ),
        2
    );
    assert_eq!(backend.gauge_value(names::SUCCESS_RATE, &run), Some(0.8));
    assert_eq!(
        backend.histogram_count(names::ITEM_DURATION_SECONDS, &run),
        10
    );
    assert!(backend.gauge_value(names::ETA_SECONDS, &run).is_some());

    bus.emit_event(at(31.0, "extraction.completed", json!({"run_id": "r1"})))
        .unwrap();
    assert!(metrics.snapshot_of("r1").unwrap().ended);
}

#[test]
fn duration_in_the_outcome_counts_and_runs_stay_apart() {
    let bus = Bus::new();
    let metrics = MetricsConsumer::builder()
        .success("task.completed")
        .failure("task.failed")
        .build()
        .unwrap();
    metrics.attach(&bus).unwrap();
    for (run, t, ms) in [("a", "task.completed", 10.0), ("b", "task.failed", 30.0)] {
        let e = Event::builder(t)
            .run_id(run)
            .data(json!({"duration_ms": ms}))
            .build()
            .unwrap();
        bus.emit_event(e).unwrap();
    }
    let runs = metrics.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].succeeded, runs[0].latency.p50_ms), (1, 10.0));
    assert_eq!((runs[1].failed, runs[1].latency.p99_ms), (1, 30.0));
    assert_eq!(runs[1].eta_seconds, None);
}
