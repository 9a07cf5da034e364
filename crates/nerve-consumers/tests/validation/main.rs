//! The validation consumer on a real bus: a broken run halts at the
//! checkpoint, a good run passes, a degrading run warns.

use std::sync::{Arc, Mutex};

use nerve_consumers::{Checkpoint, ValidationConsumer};
use nerve_core::Event;
use nerve_router::{Bus, EmitError};
use serde_json::{Value, json};

/// Records every event of these patterns.
fn record(bus: &Bus, pattern: &str) -> Arc<Mutex<Vec<Event>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bus.subscribe(pattern, move |e: &Event| {
        log.lock().unwrap().push(e.clone())
    })
    .unwrap();
    seen
}

/// Emits `n` items, `ok(i)` deciding success; returns where it halted.
fn run_items(bus: &Bus, n: u64, ok: impl Fn(u64) -> bool) -> Option<(u64, EmitError)> {
    for i in 1..=n {
        let t = if ok(i) {
            "specimen.completed"
        } else {
            "specimen.failed"
        };
        if let Err(e) = bus.emit(t, json!({"sequence": i})) {
            return Some((i, e));
        }
    }
    None
}

#[test]
fn a_zero_percent_run_halts_at_the_checkpoint() {
    let bus = Bus::new();
    let validator = ValidationConsumer::builder().build().unwrap();
    validator.attach(&bus).unwrap();
    let checkpoints = record(&bus, "validation.checkpoint");

    bus.emit(
        "extraction.started",
        json!({"run_id": "extraction_001", "total_specimens": 2885}),
    )
    .unwrap();
    let (at, err) = run_items(&bus, 2885, |_| false).expect("the run must halt");

    assert_eq!(at, 5);
    let EmitError::Halted {
        reason,
        subscription_label,
        ..
    } = &err
    else {
        panic!("expected a halt, got {err}");
    };
    assert_eq!(
        reason,
        "early validation failed: 0% success rate after 5 specimens"
    );
    assert_eq!(subscription_label, "nerve.validation");

    let checkpoints = checkpoints.lock().unwrap();
    assert_eq!(checkpoints.len(), 1);
    let data = checkpoints[0].data();
    assert_eq!(data["run_id"], "extraction_001");
    assert_eq!(data["processed"], 5);
    assert_eq!(data["success_rate"], 0.0);
    assert_eq!(data["passed"], false);
    assert_eq!(
        data["reason"],
        "early validation failed: 0% success rate after 5 specimens"
    );
    assert_eq!(checkpoints[0].run_id(), Some("extraction_001"));

    let status = validator.status().unwrap();
    assert_eq!(status.run_id.as_deref(), Some("extraction_001"));
    assert_eq!(status.total, Some(2885));
    assert_eq!((status.processed, status.failed), (5, 5));
    assert_eq!(status.checkpoint, Checkpoint::Failed);
    assert!(!status.passed());

    // An emitter that ignores the halt is halted again at its next item.
    let again = bus.emit("specimen.completed", json!({})).unwrap_err();
    assert!(again.to_string().starts_with("early validation failed"));
}

#[test]
fn a_92_percent_run_passes_without_warnings() {
    let bus = Bus::new();
    let validator = ValidationConsumer::builder().build().unwrap();
    validator.attach(&bus).unwrap();
    let checkpoints = record(&bus, "validation.checkpoint");
    let warnings = record(&bus, "validation.warning");

    bus.emit(
        "extraction.started",
        json!({"run_id": "demo", "total": 100}),
    )
    .unwrap();
    // 92 of 100 succeed: items 6, 18, ..., 90 fail.
    let halted = run_items(&bus, 100, |i| i % 12 != 6);
    assert!(halted.is_none(), "a 92% run must not halt: {halted:?}");
    bus.emit("extraction.completed", json!({"run_id": "demo"}))
        .unwrap();

    let status = validator.status_of("demo").unwrap();
    assert_eq!((status.processed, status.succeeded), (100, 92));
    assert!((status.success_rate - 0.92).abs() < 1e-9);
    assert_eq!(status.checkpoint, Checkpoint::Passed);
    assert!(status.ended && status.passed());
    assert_eq!(status.warnings, 0);
    assert!(warnings.lock().unwrap().is_empty());
    let checkpoints = checkpoints.lock().unwrap();
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(checkpoints[0].data()["passed"], true);
    assert_eq!(checkpoints[0].data()["success_rate"], 1.0);
}

#[test]
fn a_run_that_degrades_below_70_percent_warns_every_50_items() {
    let bus = Bus::new();
    let validator = ValidationConsumer::builder().build().unwrap();
    validator.attach(&bus).unwrap();
    let warnings = record(&bus, "validation.warning");

    bus.emit("extraction.started", json!({"run_id": "r", "total": 150}))
        .unwrap();
    // The first 20 succeed, then one in two: 20 + 15 = 35 of 50 is 70%,
    // not below; at 100 it is 60 of 100, at 150 it is 85 of 150.
    let halted = run_items(&bus, 150, |i| i <= 20 || i % 2 == 0);
    assert!(halted.is_none());

    let warnings = warnings.lock().unwrap();
    let seen: Vec<(u64, f64)> = warnings
        .iter()
        .map(|w| {
            (
                w.data()["processed"].as_u64().unwrap(),
                w.data()["success_rate"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(100, 0.6), (150, 85.0 / 150.0)]);
    assert_eq!(warnings[0].data()["threshold"], 0.7);
    assert_eq!(warnings[0].data()["run_id"], "r");
    assert_eq!(validator.status().unwrap().warnings, 2);
}

#[test]
fn runs_are_kept_apart_by_run_id() {
    let bus = Bus::new();
    let validator = ValidationConsumer::builder()
        .early_checkpoint(2)
        .build()
        .unwrap();
    validator.attach(&bus).unwrap();
    let item = |t: &str, run: &str| Event::builder(t).run_id(run).build().unwrap();

    bus.emit_event(item("specimen.completed", "good")).unwrap();
    bus.emit_event(item("specimen.failed", "bad")).unwrap();
    bus.emit_event(item("specimen.completed", "good")).unwrap();
    let err = bus.emit_event(item("specimen.failed", "bad")).unwrap_err();
    assert!(
        err.to_string()
            .contains("0% success rate after 2 specimens")
    );

    assert_eq!(
        validator.status_of("good").unwrap().checkpoint,
        Checkpoint::Passed
    );
    assert_eq!(
        validator.status_of("bad").unwrap().checkpoint,
        Checkpoint::Failed
    );
    let runs: Vec<Option<String>> = validator.runs().into_iter().map(|s| s.run_id).collect();
    assert_eq!(runs, [Some("good".to_owned()), Some("bad".to_owned())]);
}

#[test]
fn any_pair_of_patterns_can_count() {
    let bus = Bus::new();
    let validator = ValidationConsumer::builder()
        .success("task.completed")
        .failure("task.failed")
        .start("job.started")
        .items("tasks")
        .early_checkpoint(3)
        .early_threshold(0.9)
        .build()
        .unwrap();
    validator.attach(&bus).unwrap();

    bus.emit("job.started", json!({"run_id": "j"})).unwrap();
    bus.emit("task.completed", Value::Null).unwrap();
    bus.emit("task.completed", Value::Null).unwrap();
    // Specimen events are not this consumer's items.
    bus.emit("specimen.failed", Value::Null).unwrap();
    let err = bus.emit("task.failed", Value::Null).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("early validation failed: 67% success rate after 3 tasks"),
        "{err}"
    );
}

#[test]
fn the_halt_comes_before_lower_priority_handlers_see_the_item() {
    let bus = Bus::new();
    let validator = ValidationConsumer::builder().build().unwrap();
    validator.attach(&bus).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = order.clone();
    bus.subscribe("*", move |e: &Event| {
        log.lock().unwrap().push(e.event_type().to_owned());
    })
    .unwrap();

    let halted = run_items(&bus, 5, |_| false);
    assert_eq!(halted.map(|(at, _)| at), Some(5));
    // The checkpoint is emitted from the validation handler, before the
    // other handlers get the fifth item.
    let order = order.lock().unwrap();
    assert_eq!(
        order[order.len() - 2..],
        ["validation.checkpoint", "specimen.failed"]
    );
}
